"""A decode worker that never answers: the server's watchdog must end it."""

import time

time.sleep(3600)
