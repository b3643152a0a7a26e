import sys

from card.cli import main

sys.exit(main())
