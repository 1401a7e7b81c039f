"""A `moepack serve --cpu-only` process on a port the kernel picks, for the Python serve tests
(edges.py, prompt_sampling.py): started with its log in a file, stopped with SIGTERM."""
import os
import signal
import subprocess
import sys
import time


class ServeProcess:
    def __init__(self, moepack, model, scratch, name, *args):
        self.log = os.path.join(scratch, name + ".log")
        self.proc = subprocess.Popen([moepack, "serve", model, "--port", "0", "--threads", "1", "--cpu-only", *args],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.port = None
        for _ in range(600):
            text = open(self.log).read()
            if " on http://" in text:
                self.port = int(text.split(" on http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
                break
            if self.proc.poll() is not None:
                sys.exit("server exited: " + text)
            time.sleep(0.05)
        if not self.port:
            sys.exit("server did not start")

    def stop(self):
        """SIGTERM; the exit status, or None when it had to be killed after 30 s"""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
