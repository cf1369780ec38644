"""The worked example 'per_sample_221' (fastbp/examples/per_sample_221.py); the same as `fastbp examples per_sample_221`.

Usage: python scripts/examples/per_sample_221.py [--help]
"""
import sys

from fastbp.examples import per_sample_221

if __name__ == "__main__":
    sys.exit(per_sample_221.main())
