import sys

from nixwarden.cli import main

sys.exit(main())
