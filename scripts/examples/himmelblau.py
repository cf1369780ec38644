"""The worked example 'himmelblau' (fastbp/examples/himmelblau.py); the same as `fastbp examples himmelblau`.

Usage: python scripts/examples/himmelblau.py [--help]
"""
import sys

from fastbp.examples import himmelblau

if __name__ == "__main__":
    sys.exit(himmelblau.main())
