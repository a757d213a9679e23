import sys

from wsgw.cli import main

sys.exit(main())
