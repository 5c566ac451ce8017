"""``python -m hybridcheck verify ...``"""

import sys

from hybridcheck.cli import main

sys.exit(main())
