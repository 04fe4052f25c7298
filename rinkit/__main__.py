import sys

from rinkit.cli import main

sys.exit(main())
