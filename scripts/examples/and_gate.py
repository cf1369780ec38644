"""The worked example 'and_gate' (fastbp/examples/and_gate.py); the same as `fastbp examples and_gate`.

Usage: python scripts/examples/and_gate.py [--help]
"""
import sys

from fastbp.examples import and_gate

if __name__ == "__main__":
    sys.exit(and_gate.main())
