import { describe, expect, it } from 'vitest'
import { SseParser, readSse } from '~/utils/sse'

const enc = new TextEncoder()

describe('the SSE reader', () => {
  it('joins data lines and dispatches on a blank line', () => {
    const p = new SseParser()
    expect(p.push('data: {"a":1}\n')).toEqual([])
    expect(p.push('data: x\n\n')).toEqual([{ event: 'message', data: '{"a":1}\nx', id: undefined }])
  })

  it('reads event names, ids and skips comments', () => {
    const p = new SseParser()
    const out = p.push(': keep-alive\n\nevent: error\nid: 7\ndata: {"error":{}}\n\n')
    expect(out).toEqual([{ event: 'error', data: '{"error":{}}', id: '7' }])
  })

  it('survives chunks split anywhere, CRLF and a UTF-8 character cut in two', () => {
    const whole = enc.encode('data: привет\r\n\r\ndata: two\r\n\r\n')
    for (let cut = 1; cut < whole.length; cut++) {
      const p = new SseParser()
      const out = [...p.push(whole.slice(0, cut)), ...p.push(whole.slice(cut)), ...p.end()]
      expect(out.map((e) => e.data), `cut at ${cut}`).toEqual(['привет', 'two'])
    }
  })

  it('keeps a single space after the colon only once', () => {
    const p = new SseParser()
    expect(p.push('data:  two spaces\n\n')[0]!.data).toBe(' two spaces')
  })

  it('reads a fetch body to its end, including an event without the final blank line', async () => {
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode('data: {"delta":"Hel'))
        c.enqueue(enc.encode('lo"}\n\ndata: {"finished":{}}'))
        c.close()
      },
    })
    const events = []
    for await (const e of readSse(body)) events.push(JSON.parse(e.data))
    expect(events).toEqual([{ delta: 'Hello' }, { finished: {} }])
  })
})
