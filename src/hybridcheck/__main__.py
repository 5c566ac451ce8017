"""``python -m hybridcheck verify ...``"""

import sys

from hybridcheck.entrypoints.cli import main

sys.exit(main())
