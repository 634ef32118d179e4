// Server-sent events read from a `fetch` body (EventSource cannot POST or send headers): the
// WHATWG framing — `event:`, `data:` (joined by newlines), `id:`, comments and blank-line
// dispatch — over chunks that may split anywhere, also inside a UTF-8 character or a CRLF.

export interface SseEvent {
  event: string
  data: string
  id?: string
}

export class SseParser {
  private buffer = ''
  private event = ''
  private data: string[] = []
  private id: string | undefined
  private decoder = new TextDecoder()

  /** The events completed by `chunk`. */
  push(chunk: Uint8Array | string): SseEvent[] {
    this.buffer += typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true })
    const out: SseEvent[] = []
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/)
      if (nl < 0) break
      // A lone CR at the very end may be the first half of a CRLF: wait for more.
      if (this.buffer[nl] === '\r' && nl === this.buffer.length - 1) break
      const width = this.buffer.startsWith('\r\n', nl) ? 2 : 1
      const line = this.buffer.slice(0, nl)
      this.buffer = this.buffer.slice(nl + width)
      const ev = this.line(line)
      if (ev) out.push(ev)
    }
    return out
  }

  /** What a stream that ended without a final blank line still held. */
  end(): SseEvent[] {
    const rest = this.buffer + this.decoder.decode()
    this.buffer = ''
    const out: SseEvent[] = []
    if (rest) {
      const ev = this.line(rest)
      if (ev) out.push(ev)
    }
    const last = this.line('')
    if (last) out.push(last)
    return out
  }

  private line(line: string): SseEvent | undefined {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = ''
        return undefined
      }
      const ev: SseEvent = { event: this.event || 'message', data: this.data.join('\n'), id: this.id }
      this.event = ''
      this.data = []
      return ev
    }
    if (line.startsWith(':')) return undefined
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'event') this.event = value
    else if (field === 'data') this.data.push(value)
    else if (field === 'id' && !value.includes('\0')) this.id = value
    return undefined
  }
}

/** Every event of `body` as it arrives. */
export async function* readSse(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SseEvent> {
  const parser = new SseParser()
  const reader = body.getReader()
  const stop = () => reader.cancel().catch(() => {})
  signal?.addEventListener('abort', stop, { once: true })
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      yield* parser.push(value)
    }
    yield* parser.end()
  } finally {
    signal?.removeEventListener('abort', stop)
    reader.releaseLock()
  }
}
