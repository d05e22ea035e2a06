"""Reads sslyze's JSON report of notary and fails unless the scan completed,
only TLS 1.2 and 1.3 are accepted, and sslyze found the server compliant
with Mozilla's intermediate profile. Prints what was offered and a summary.

Usage: check_report.py REPORT.json SSLYZE_EXIT_CODE SSLYZE_OUTPUT.txt
"""

import json
import sys

report_path, exit_code, output_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
report = json.load(open(report_path))
checks = []


def check(name, ok, detail=""):
    checks.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


server = report["server_scan_results"][0]
check("scan completed", server["connectivity_status"] == "COMPLETED", server["connectivity_status"])
result = server.get("scan_result") or {}
accepted = {}
for name in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3"]:
    suites = (result.get(f"{name}_cipher_suites") or {}).get("result") or {}
    accepted[name] = [s["cipher_suite"]["name"] for s in suites.get("accepted_cipher_suites", [])]
for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"]:
    check(f"{old} refused", not accepted[old], ", ".join(accepted[old]))
for new in ["tls_1_2", "tls_1_3"]:
    check(f"{new} accepted", bool(accepted[new]), ", ".join(accepted[new]))
weak = [s for s in accepted["tls_1_2"] if "CBC" in s or "RC4" in s or "3DES" in s or "NULL" in s or "EXPORT" in s]
check("no weak TLS 1.2 suites (CBC, RC4, 3DES, NULL, EXPORT)", not weak, ", ".join(weak))
# The verdict is the line naming the scanned server under "COMPLIANCE".
output = open(output_path).read()
verdict = output.split("COMPLIANCE AGAINST", 1)[-1]
verdict = next((l.strip() for l in verdict.splitlines() if l.strip().startswith("localhost:")), "no verdict")
check("sslyze: compliant with Mozilla intermediate", exit_code == 0, verdict)
if exit_code != 0:
    print(output[-3000:])
print(f"tls: {sum(checks)} passed, {len(checks) - sum(checks)} failed")
sys.exit(0 if all(checks) else 1)
