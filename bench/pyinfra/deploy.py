"""The bench workload for pyinfra 3: bench/workload.json, as pyinfra's own users would write it.

Run: pyinfra -y <inventory.py> bench/pyinfra/deploy.py   (BENCH_WORKLOAD=bench/workload.json)
"""
import io
import json
import os

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

with open(os.environ["BENCH_WORKLOAD"]) as f:
    W = json.load(f)

files.directory(name="bench directory", path=W["dir"]["path"], mode=W["dir"]["mode"])

for spec in W["files"]:
    files.put(name=f"file {spec['path']}", src=io.StringIO(spec["content"]), dest=spec["path"], mode=spec["mode"])

# Already installed in the image: no cache update, so the network never decides the result.
apt.packages(name="bench packages", packages=W["packages"])

systemd.service(name="bench service", service=W["service"], running=True, enabled=True)

# files.line: `line` is the regex that finds the line, `replace` the line wanted (appended when nothing matches).
files.line(
    name="bench line",
    path=W["line"]["path"],
    line=W["line"]["match"] + ".*$",
    replace=W["line"]["line"],
    extended_regex=True,
)

# A guarded command: pyinfra's server.shell has no guard of its own, so a fact decides (read before the deploy).
if not host.get_fact(File, path=W["command"]["creates"]):
    server.shell(name="bench command", commands=[W["command"]["run"]])
