"""A stand-in for a paid text provider: an OpenAI-compatible Chat Completions server with a
fixed latency, speaking the real wire format (JSON, or SSE chunks ending with `[DONE]` and the
usage chunk `stream_options.include_usage` asks for). SkillUp's ai service is pointed at it as a
`compatible` provider, so the SDK tests control how long an answer takes.

Each answer is WORDS words (`word1 word2 …`), one SSE chunk per word, DELAY_MS apart; a request
that names "slow" anywhere in its messages gets SLOW_WORDS words, SLOW_MS apart. Usage: the
prompt's words, and the words sent. A `stop` sequence ends the answer before it, as providers do;
`GET /last` answers the body of the last request (to check what SkillUp sent).

Usage: provider_standin.py PORT
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = int(os.environ.get("STANDIN_WORDS", "40"))
DELAY_MS = int(os.environ.get("STANDIN_DELAY_MS", "0"))
SLOW_WORDS = int(os.environ.get("STANDIN_SLOW_WORDS", "200"))
SLOW_MS = int(os.environ.get("STANDIN_SLOW_MS", "20"))


LAST = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = json.dumps(LAST).encode()
        self.send_response(200 if self.path == "/last" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        LAST.clear()
        LAST.update(body)
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        slow = "slow" in prompt.lower()
        delay = (SLOW_MS if slow else DELAY_MS) / 1000
        count = SLOW_WORDS if slow else WORDS
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or count
        words = [f"word{i}" for i in range(1, min(count, limit) + 1)]
        stops = body.get("stop") or []
        for i in range(len(words)):
            if any(s in " ".join(words[: i + 1]) for s in ([stops] if isinstance(stops, str) else stops)):
                words = words[:i]
                break
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = body.get("model", "standin-1")
        if not body.get("stream"):
            time.sleep(delay * len(words))
            answer = {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()

        def send(obj):
            payload = obj if isinstance(obj, str) else json.dumps(obj)
            self.wfile.write(f"data: {payload}\n\n".encode())
            self.wfile.flush()

        def chunk(delta, finish=None):
            return {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        try:
            for i, w in enumerate(words):
                time.sleep(delay)
                send(chunk({"content": w if i == 0 else " " + w}))
            send(chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                send({**chunk({}), "choices": [], "usage": usage})
            send("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller left: stop, as a provider does


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
