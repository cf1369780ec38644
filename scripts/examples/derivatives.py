"""The worked example 'derivatives' (fastbp/examples/derivatives.py); the same as `fastbp examples derivatives`.

Usage: python scripts/examples/derivatives.py [--help]
"""
import sys

from fastbp.examples import derivatives

if __name__ == "__main__":
    sys.exit(derivatives.main())
