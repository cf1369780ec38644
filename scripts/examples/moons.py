"""The worked example 'moons' (fastbp/examples/moons.py); the same as `fastbp examples moons`.

Usage: python scripts/examples/moons.py [--help]
"""
import sys

from fastbp.examples import moons

if __name__ == "__main__":
    sys.exit(moons.main())
