"""The official `openai` Python SDK against SkillUp's OpenAI-compatible `/v1`, on a running
`skillup up` whose text provider is a local stand-in with a fixed latency (provider_standin.py).

Environment (set by scripts/test-sdk): SDK_BASE_URL (the platform), SDK_TIGHT_URL (a second
one whose generation budget is 2 a minute), SDK_OUTBOX / SDK_TIGHT_OUTBOX (their mail).
"""

import concurrent.futures
import glob
import os
import re
import time
import uuid

import httpx2 as httpx  # the HTTP client the openai SDK itself uses (its fork of httpx)
import openai
import pytest

URL = os.environ["SDK_BASE_URL"]
OUTBOX = os.environ["SDK_OUTBOX"]
PASSWORD = "correct horse battery staple"
FULL = " ".join(f"word{i}" for i in range(1, 41))


def account(base=URL, outbox=OUTBOX, verified=True):
    """A new person: registered, their address confirmed, signed in, with an API key."""
    email = f"sdk-{uuid.uuid4().hex[:12]}@example.com"
    http = httpx.Client(base_url=base, timeout=30)
    r = http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    if verified:
        token = None
        for _ in range(100):
            for path in glob.glob(os.path.join(outbox, "*.eml")):
                text = open(path, encoding="utf-8", errors="replace").read()
                if email in text:
                    m = re.search(r"verify-email\?token=([A-Za-z0-9_-]+)", text.replace("=\n", ""))
                    if m:
                        token = m.group(1)
            if token:
                break
            time.sleep(0.1)
        assert token, f"no verification letter for {email}"
        assert http.post("/api/auth/verify-email", json={"token": token}).status_code == 200
    access = http.post("/api/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
    r = http.post("/api/auth/api-keys", json={"name": "sdk"}, headers={"authorization": f"Bearer {access}"})
    assert r.status_code == 201, r.text
    return r.json()["secret"], access


def client(key, base=URL, **kw):
    return openai.OpenAI(api_key=key, base_url=f"{base}/v1", **kw)


def usage(access, base=URL):
    r = httpx.get(f"{base}/api/subscriptions/me/usage", headers={"authorization": f"Bearer {access}"})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def person():
    return account()


def test_models_are_the_catalogs_functions_and_the_providers_models(person):
    key, _ = person
    models = client(key).models.list().data
    ids = {m.id for m in models}
    assert {"skillup/quiz", "skillup/summary", "skillup/lesson_plan", "standin/standin-1"} <= ids, ids
    assert all(m.object == "model" for m in models)
    assert all(m.owned_by == "skillup" for m in models if m.id.startswith("skillup/"))
    assert [m.owned_by for m in models if m.id == "standin/standin-1"] == ["compatible"]


def test_a_chat_completion(person):
    key, _ = person
    raw = client(key).chat.completions.with_raw_response.create(
        model="skillup/quiz",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Photosynthesis"}],
        user="end-user-1",
    )
    assert raw.headers["x-request-id"]
    assert int(raw.headers["x-ratelimit-limit-requests"]) > 0
    c = raw.parse()
    assert c.id.startswith("chatcmpl-") and c.object == "chat.completion"
    assert c.model == "skillup/quiz"
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content == FULL
    assert c.choices[0].finish_reason == "stop"
    assert c.usage.completion_tokens == 40
    assert c.usage.total_tokens == c.usage.prompt_tokens + 40


def subscribe(access, plan="basic"):
    auth = {"authorization": f"Bearer {access}"}
    r = httpx.post(f"{URL}/api/payments/top-up", headers={**auth, "idempotency-key": uuid.uuid4().hex},
                   json={"amount_minor": 100000, "currency": "RUB"})
    assert r.status_code in (200, 201), r.text
    r = httpx.post(f"{URL}/api/subscriptions", headers=auth, json={"plan": plan})
    assert r.status_code in (200, 201), r.text


def test_a_providers_model_takes_the_messages_as_they_are():
    key, access = account()
    c = client(key)
    assert "standin/standin-1" in {m.id for m in c.models.list().data}
    conversation = [
        {"role": "system", "content": "You answer in words."},
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "one two three"},
        {"role": "user", "content": "Now to forty."},
    ]
    # The free plan does not include the providers' own models.
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="standin/standin-1", messages=conversation)
    assert e.value.code == "model_not_allowed"
    subscribe(access)
    answer = c.chat.completions.create(model="standin/standin-1", messages=conversation, max_tokens=100)
    assert answer.choices[0].message.content == FULL
    assert answer.model == "standin/standin-1"
    sent = httpx.get(f"{os.environ['STANDIN_URL']}/last").json()
    assert sent["model"] == "standin-1"
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [(m["role"], m["content"]) for m in conversation]
    assert not sent.get("stream"), "a whole answer is asked of the provider whole, as OpenAI's API does"
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="standin/another-model", messages=conversation)
    docs = httpx.get(f"{URL}/api/generate", headers={"authorization": f"Bearer {access}"}).json()["tasks"]
    assert (docs[0]["function"], docs[0]["topic"], docs[0]["delivery"]) == ("chat", "Now to forty.", "DELIVERY_API")


def test_sampling_reaches_the_provider(person):
    key, _ = person
    c = client(key).chat.completions.create(
        model="skillup/quiz",
        messages=[{"role": "user", "content": "Sampling"}],
        temperature=0.3,
        top_p=0.9,
        stop=["word9"],
    )
    assert c.choices[0].message.content == " ".join(f"word{i}" for i in range(1, 9))
    sent = httpx.get(f"{os.environ['STANDIN_URL']}/last").json()
    assert (round(sent["temperature"], 3), round(sent["top_p"], 3), sent["stop"]) == (0.3, 0.9, ["word9"])


def test_a_streamed_completion_assembles_and_ends_with_its_usage(person):
    key, _ = person
    stream = client(key).chat.completions.create(
        model="skillup/summary",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Volcanoes of Kamchatka"}]}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=200,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FULL
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40
    assert all(c.usage is None for c in chunks[:-1])


def test_each_refusal_raises_the_sdks_own_exception(person):
    key, _ = person
    ask = {"messages": [{"role": "user", "content": "Rust"}]}
    with pytest.raises(openai.AuthenticationError) as e:
        client("sk-skillup-" + "x" * 43).chat.completions.create(model="skillup/quiz", **ask)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    for model in ["gpt-nope", "skillup/no-such-function"]:
        with pytest.raises(openai.NotFoundError) as e:
            client(key).chat.completions.create(model=model, **ask)
        assert e.value.code == "model_not_found", e.value
    # A function above the plan.
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(key).chat.completions.create(model="skillup/lesson_plan", **ask)
    assert e.value.code == "model_not_allowed"
    # An unconfirmed address.
    unverified, _ = account(verified=False)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(unverified).chat.completions.create(model="skillup/quiz", **ask)
    assert e.value.code == "email_not_verified"
    # Bad input names its parameter.
    for extra, param in [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"max_tokens": 0}, "max_tokens"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client(key).chat.completions.create(model="skillup/quiz", **ask, **extra)
        assert e.value.param == param, (extra, e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client(key).chat.completions.create(model="skillup/quiz", messages=[{"role": "system", "content": "x"}])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client(key).chat.completions.create(model="skillup/quiz", messages=[{"role": "user", "content": "x" * 201}])
    assert e.value.param == "messages"


def counting_client(key, base=URL, max_retries=2):
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]}, timeout=30)
    return client(key, base, http_client=http, max_retries=max_retries), sent


def test_the_rate_budget_is_a_retried_rate_limit_error():
    base, outbox = os.environ["SDK_TIGHT_URL"], os.environ["SDK_TIGHT_OUTBOX"]
    key, _ = account(base, outbox)
    c, sent = counting_client(key, base, max_retries=0)
    ask = {"model": "skillup/quiz", "messages": [{"role": "user", "content": "Rust"}], "max_tokens": 50}
    c.chat.completions.create(**ask)
    c.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(**ask)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) > 0
    assert e.value.response.headers.get("x-should-retry") != "false"
    assert len(sent) == 3


def charge_of(access, run):
    """Tokens and generations `run` cost, once its hold has settled."""
    before = usage(access)
    run()
    for _ in range(100):
        after = usage(access)
        if int(after["tokens_held"]) == 0 and after["tokens_used"] != before["tokens_used"]:
            break
        time.sleep(0.1)
    tokens = int(after["tokens_used"]) - int(before["tokens_used"])
    return tokens, int(after["generations_used"]) - int(before["generations_used"])


def test_an_early_close_is_charged_only_what_was_generated():
    key, access = account()
    ask = {"model": "skillup/quiz", "messages": [{"role": "user", "content": "a slow topic"}], "stream": True}

    def whole():
        chunks = client(key).chat.completions.create(**ask)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == " ".join(f"word{i}" for i in range(1, 201))

    def early():
        stream = client(key).chat.completions.create(**ask)
        got = 0
        for c in stream:
            got += bool(c.choices and c.choices[0].delta.content)
            if got == 5:
                break
        stream.close()

    full, _ = charge_of(access, whole)
    cut, generations = charge_of(access, early)
    # Five of the 200 words were read when the client left (the answer takes 4 s): the prompt
    # (ai's estimate of it: the provider never reported) and those few words are charged, not
    # the rest.
    assert 0 < cut <= full - 150, (cut, full)
    assert generations == 1
    docs = httpx.get(f"{URL}/api/generate", headers={"authorization": f"Bearer {access}"}).json()["tasks"]
    assert docs[0]["delivery"] == "DELIVERY_API" and docs[0]["interrupted"] is True, docs[0]
    assert docs[1]["delivery"] == "DELIVERY_API" and not docs[1].get("interrupted"), docs[1]


def test_fifty_at_once_against_ten_left_succeed_exactly_ten_times():
    key, access = account()
    c, _ = counting_client(key)
    ask = {"messages": [{"role": "user", "content": "Quota"}], "max_tokens": 50}
    limit = int(usage(access)["generation_quota"])
    for _ in range(limit - 10):
        c.chat.completions.create(model="skillup/quiz", **ask)
    c, sent = counting_client(key, max_retries=3)

    def one(_):
        try:
            c.chat.completions.create(model="skillup/quiz", **ask)
            return "ok"
        except openai.RateLimitError as e:
            assert e.code == "insufficient_quota", e
            assert e.response.headers["x-should-retry"] == "false"
            return "quota"

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert results.count("ok") == 10, results
    assert results.count("quota") == 40
    # The SDK's automatic retries stopped at the quota: one request each.
    assert len(sent) == 50
    assert int(usage(access)["generations_used"]) == limit


def test_v1_calls_are_measured_like_every_route(person):
    key, _ = person
    client(key).models.list()
    metrics = httpx.get(f"{URL}/metrics").text
    for route in ["/v1/models", "/v1/chat/completions"]:
        assert re.search(rf'http_requests_total\{{[^}}]*route="{re.escape(route)}"[^}}]*status="200"', metrics), route
