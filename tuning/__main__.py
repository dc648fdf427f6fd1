"""python -m tuning --config configs/X.yaml --out runs/NAME [...]: see tuning/search.py."""
import sys

from tuning.search import main

if __name__ == "__main__":
    sys.exit(main())
