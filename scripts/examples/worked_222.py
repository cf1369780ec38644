"""The worked example 'worked_222' (fastbp/examples/worked_222.py); the same as `fastbp examples worked_222`.

Usage: python scripts/examples/worked_222.py [--help]
"""
import sys

from fastbp.examples import worked_222

if __name__ == "__main__":
    sys.exit(worked_222.main())
