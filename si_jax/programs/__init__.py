"""The command-line programs: flags, one library call, one error line."""
