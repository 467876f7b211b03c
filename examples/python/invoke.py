"""SAMI MusicSourceSeparate client, shaped like the official Python sample.

Only the host, appkey and token differ from the sample; they come from the
environment so the same file runs against any gateway:
    SAMI_URL=http://127.0.0.1:8080 SAMI_APPKEY=... SAMI_TOKEN=... \
        python invoke.py song.wav [model]
"""
import base64
import json
import os
import sys

import requests

# Construct HTTP request
model = sys.argv[2] if len(sys.argv) > 2 else "2track_vocal"
payload = json.dumps({"model": model})
with open(sys.argv[1], "rb") as f:
    data = f.read()
    data = base64.b64encode(data).decode('utf-8')
req = {
    "appkey": os.environ["SAMI_APPKEY"],
    "token": os.environ["SAMI_TOKEN"],
    "namespace": "MusicSourceSeparate",
    "payload": payload,
    "data": data
}

if __name__ == "__main__":
    # HTTP POST request
    resp = requests.post(os.environ.get("SAMI_URL", "http://127.0.0.1:8080") + "/api/v1/invoke", json=req)

    # Parse HTTP SAMI response
    try:
        sami_resp = resp.json()
        if resp.status_code != 200:
            print(sami_resp)
            sys.exit(1)
    except Exception:
        print(resp)
        sys.exit(1)

    print("response task_id=%s status_code=%d status_text=%s" % (
        sami_resp["task_id"], sami_resp["status_code"], sami_resp["status_text"]), end=" ")
    if "payload" in sami_resp and len(sami_resp["payload"]) > 0:
        print("payload=%s" % sami_resp["payload"], end=" ")
    if "data" in sami_resp and len(sami_resp["data"]) > 0:
        # Save audio data into file
        data = base64.b64decode(sami_resp["data"])
        print("data=[%d]bytes" % len(data))
        with open("output.wav", "wb") as f:
            f.write(data)
