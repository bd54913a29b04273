import sys

from mmseg_heads.cli.main import main

sys.exit(main())
