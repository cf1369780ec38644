"""The worked example 'nielsen_mnist' (fastbp/examples/nielsen_mnist.py); the same as `fastbp examples nielsen_mnist`.

Usage: python scripts/examples/nielsen_mnist.py [--help]
"""
import sys

from fastbp.examples import nielsen_mnist

if __name__ == "__main__":
    sys.exit(nielsen_mnist.main())
