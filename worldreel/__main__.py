import sys

from worldreel.cli import main

sys.exit(main())
