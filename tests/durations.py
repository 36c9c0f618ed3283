"""Seconds per test file, for conftest.py's ordering (the longest files first), from a pytest log with every duration:

    pytest --durations=0 > /tmp/durations.log; python tests/durations.py /tmp/durations.log

writes tests/durations.json ({file: seconds}, summed over its tests' setup, call and teardown). Under `--dist loadfile`
each file runs on one worker; a long file that starts last keeps one worker busy while the others have finished.
Starting the longest files first (the classic longest-processing-time rule) shortens that tail. The numbers only order
the files: stale ones cost time, not correctness."""
import collections
import json
import re
import sys
from pathlib import Path


def file_seconds(log: str) -> dict:
    total = collections.Counter()
    for line in log.splitlines():
        m = re.match(r"\s*([0-9.]+)s (?:call|setup|teardown)\s+(\S+?)::", line)
        if m: total[m.group(2)] += float(m.group(1))
    return {f: round(s, 1) for f, s in total.most_common()}


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("log", type=Path, help="a pytest log run with --durations=0")
    seconds = file_seconds(ap.parse_args().log.read_text())
    out = Path(__file__).with_name("durations.json")
    out.write_text(json.dumps(seconds, indent=0) + "\n")
    print(f"{out}: {len(seconds)} files, {sum(seconds.values()):.0f} s in all")
