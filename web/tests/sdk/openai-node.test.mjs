// The official `openai` npm SDK against SkillUp's OpenAI-compatible `/v1`, on a running
// `skillup up` whose text provider is a local stand-in (tests/sdk/provider_standin.py). Run by
// scripts/test-sdk with the console's Node 24 (`node --test`); the environment says where
// the platform and its mail are.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import OpenAI from 'openai'

const URL = process.env.SDK_BASE_URL
const OUTBOX = process.env.SDK_OUTBOX
const PASSWORD = 'correct horse battery staple'
const FULL = Array.from({ length: 40 }, (_, i) => `word${i + 1}`).join(' ')

async function post(path, body, token) {
  const headers = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }
  return fetch(`${URL}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
}

/** A new person: registered, their address confirmed, signed in, with an API key. */
async function account() {
  const email = `sdk-node-${crypto.randomUUID().slice(0, 12)}@example.com`
  assert.equal((await post('/api/auth/register', { email, password: PASSWORD })).status, 201)
  let token
  for (let i = 0; i < 100 && !token; i++) {
    for (const f of readdirSync(OUTBOX).filter((f) => f.endsWith('.eml'))) {
      const text = readFileSync(join(OUTBOX, f), 'utf8').replaceAll('=\n', '')
      if (text.includes(email)) token = text.match(/verify-email\?token=([A-Za-z0-9_-]+)/)?.[1]
    }
    if (!token) await new Promise((r) => setTimeout(r, 100))
  }
  assert.ok(token, `no verification letter for ${email}`)
  assert.equal((await post('/api/auth/verify-email', { token })).status, 200)
  const access = (await (await post('/api/auth/login', { email, password: PASSWORD })).json()).access_token
  const made = await post('/api/auth/api-keys', { name: 'node sdk' }, access)
  assert.equal(made.status, 201)
  return { key: (await made.json()).secret, access }
}

const client = (apiKey, opts = {}) => new OpenAI({ apiKey, baseURL: `${URL}/v1`, ...opts })
const person = account()

test('models are the catalog’s functions', async () => {
  const { key } = await person
  const ids = []
  for await (const m of client(key).models.list()) ids.push(m.id)
  assert.ok(['skillup/quiz', 'skillup/summary'].every((id) => ids.includes(id)), ids.join())
})

test('a chat completion', async () => {
  const { key } = await person
  const c = await client(key).chat.completions.create({
    model: 'skillup/quiz',
    messages: [{ role: 'user', content: 'Photosynthesis' }],
  })
  assert.equal(c.object, 'chat.completion')
  assert.equal(c.choices[0].message.content, FULL)
  assert.equal(c.choices[0].finish_reason, 'stop')
  assert.equal(c.usage.completion_tokens, 40)
})

test('a streamed completion assembles and ends with its usage', async () => {
  const { key } = await person
  const stream = await client(key).chat.completions.create({
    model: 'skillup/summary',
    messages: [{ role: 'user', content: 'Volcanoes' }],
    stream: true,
    stream_options: { include_usage: true },
  })
  let text = ''
  let last
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? ''
    last = chunk
  }
  assert.equal(text, FULL)
  assert.deepEqual(last.choices, [])
  assert.equal(last.usage.completion_tokens, 40)
})

test('each refusal raises the SDK’s own error class', async () => {
  const { key } = await person
  const ask = (k, extra = {}) =>
    client(k, { maxRetries: 0 }).chat.completions.create({
      model: 'skillup/quiz',
      messages: [{ role: 'user', content: 'Rust' }],
      ...extra,
    })
  await assert.rejects(ask(`sk-skillup-${'x'.repeat(43)}`), (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key')
  await assert.rejects(ask(key, { model: 'gpt-nope' }), (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found')
  await assert.rejects(ask(key, { model: 'skillup/lesson_plan' }), (e) => e instanceof OpenAI.PermissionDeniedError)
  await assert.rejects(ask(key, { n: 3 }), (e) => e instanceof OpenAI.BadRequestError && e.param === 'n')
})

test('a spent quota is a RateLimitError the SDK does not retry', async () => {
  const { key, access } = await account()
  const usage = async () =>
    (await fetch(`${URL}/api/subscriptions/me/usage`, { headers: { authorization: `Bearer ${access}` } })).json()
  const quota = Number((await usage()).generation_quota)
  const c = client(key)
  const ask = () => c.chat.completions.create({ model: 'skillup/quiz', messages: [{ role: 'user', content: 'Quota' }], max_tokens: 50 })
  for (let i = 0; i < quota; i++) await ask()
  let sent = 0
  const counting = client(key, {
    maxRetries: 3,
    fetch: (url, init) => {
      sent++
      return fetch(url, init)
    },
  })
  await assert.rejects(
    counting.chat.completions.create({ model: 'skillup/quiz', messages: [{ role: 'user', content: 'Quota' }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.code === 'insufficient_quota',
  )
  assert.equal(sent, 1, 'no retries on a spent quota')
})
