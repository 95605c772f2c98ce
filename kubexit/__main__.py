import sys

from kubexit.cli import main

sys.exit(main())
