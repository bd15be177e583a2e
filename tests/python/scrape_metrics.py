"""Scrapes a perfcopy metrics endpoint with urllib (a client perfcopy did not write) until it goes
away: one JSON line per scrape on stdout ({"status", "content_type", "body"}), and one for a 404
check. Usage: scrape_metrics.py URL"""
import json
import sys
import time
import urllib.error
import urllib.request

url = sys.argv[1]
base = url.rsplit("/", 1)[0]
try:
    urllib.request.urlopen(base + "/nothing-here", timeout=5)
    print(json.dumps({"not_found_status": 200}), flush=True)
except urllib.error.HTTPError as e:
    print(json.dumps({"not_found_status": e.code}), flush=True)
except OSError:
    pass
failures = 0
while failures < 20:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode("utf-8")
            print(json.dumps({"status": r.status, "content_type": r.headers.get("Content-Type"), "body": body}), flush=True)
            failures = 0
    except (urllib.error.URLError, ConnectionError, OSError):
        failures += 1
    time.sleep(0.05)
