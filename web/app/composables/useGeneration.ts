// One generation as the Generate page runs it: streamed (SSE read from `fetch`, rendered once a
// frame), or queued (202, then the result arrives through the notifications socket, with a
// slow poll as a fallback). Stop aborts the stream; the server keeps what was written.
import { ref, shallowRef } from 'vue'
import { api, authedFetch, unwrap, type Task } from '~/api/client'
import { ApiFailure, failureOf } from '~/utils/errors'
import { readSse } from '~/utils/sse'
import { useNotifications } from '~/stores/notifications'

export interface GenerateInput {
  topic: string
  function: string
  params: Record<string, string>
  locale: string
}

export type Phase = 'idle' | 'streaming' | 'queued' | 'running' | 'done' | 'stopped' | 'failed'

export function useGeneration() {
  const phase = ref<Phase>('idle')
  const text = ref('')
  const id = ref('')
  const meta = ref<{ provider?: string | null; model?: string | null; cached?: boolean | null; tokens?: number; finish?: string | null }>({})
  const error = shallowRef<unknown>(null)
  let controller: AbortController | undefined
  let poll: ReturnType<typeof setInterval> | undefined
  let unlisten: (() => void) | undefined

  function reset() {
    controller?.abort()
    clearInterval(poll)
    unlisten?.()
    phase.value = 'idle'
    text.value = ''
    id.value = ''
    meta.value = {}
    error.value = null
  }

  async function stream(input: GenerateInput, onDelta: (arrivedAt: number) => void) {
    reset()
    phase.value = 'streaming'
    controller = new AbortController()
    const request = new Request('/api/generate/stream', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ ...input, idempotency_key: crypto.randomUUID() }),
      signal: controller.signal,
    })
    try {
      const res = await authedFetch(request)
      if (!res.ok || !res.body) throw failureOf(res.status, await res.json().catch(() => undefined), res.headers)
      for await (const ev of readSse(res.body, controller.signal)) {
        const arrivedAt = performance.now()
        const data = JSON.parse(ev.data)
        if (ev.event === 'error') throw failureOf(data?.error?.status ?? 502, data, undefined)
        if (data.started) {
          id.value = data.started.id
          meta.value = { provider: data.started.provider, model: data.started.model, cached: data.started.cached }
        } else if (typeof data.delta === 'string') {
          text.value += data.delta
          onDelta(arrivedAt)
        } else if (data.finished) {
          meta.value = { ...meta.value, tokens: Number(data.finished.usage?.total_tokens ?? 0), finish: data.finished.finish_reason }
        }
      }
      phase.value = (phase.value as Phase) === 'stopped' ? 'stopped' : 'done'
    } catch (e) {
      if (controller.signal.aborted) {
        phase.value = 'stopped'
        return
      }
      error.value = e
      phase.value = 'failed'
    }
  }

  function stop() {
    if (phase.value === 'streaming') {
      phase.value = 'stopped'
      controller?.abort()
    }
  }

  function adoptTask(task: Task) {
    id.value = task.id ?? id.value
    const s = task.status ?? ''
    if (s === 'TASK_STATUS_COMPLETED') {
      text.value = task.text ?? ''
      meta.value = { provider: task.provider, model: task.model, tokens: Number(task.usage?.total_tokens ?? 0), finish: task.finish_reason }
      phase.value = 'done'
      finishQueue()
    } else if (s === 'TASK_STATUS_FAILED' || s === 'TASK_STATUS_CANCELLED') {
      error.value = new ApiFailure(422, s === 'TASK_STATUS_FAILED' ? 'GENERATION_FAILED' : 'CANCELLED', task.error ?? '')
      phase.value = 'failed'
      finishQueue()
    } else {
      phase.value = s === 'TASK_STATUS_RUNNING' ? 'running' : 'queued'
    }
  }

  async function check() {
    const task = id.value
    if (!task) return
    try {
      const t = await unwrap(api.GET('/api/generate/{task_id}', { params: { path: { task_id: task } } }))
      if (t.id === id.value && (phase.value === 'queued' || phase.value === 'running')) adoptTask(t)
    } catch {
      // Tried again by the next poll.
    }
  }

  function finishQueue() {
    clearInterval(poll)
    unlisten?.()
    unlisten = undefined
  }

  async function queue(input: GenerateInput) {
    reset()
    phase.value = 'queued'
    try {
      // Listen before asking: a fast worker's result may arrive before the 202 does.
      unlisten = useNotifications().onArrival((n) => {
        const task = (n.data as Record<string, string> | undefined)?.task_id
        if (task && task === id.value) void check()
      })
      const task = await unwrap(api.POST('/api/generate/tasks', { body: { ...input, idempotency_key: crypto.randomUUID() } }))
      adoptTask(task)
      if (phase.value !== 'queued' && phase.value !== 'running') return
      // What arrived before the id was known, asked once; a slow poll covers a socket that is down.
      void check()
      poll = setInterval(() => void check(), 15_000)
    } catch (e) {
      error.value = e
      phase.value = 'failed'
    }
  }

  async function regenerate() {
    const from = id.value
    reset()
    phase.value = 'queued'
    try {
      const r = await unwrap(api.POST('/api/generate/{task_id}/regenerate', { params: { path: { task_id: from } } }))
      if (r.completion) {
        id.value = r.completion.id ?? ''
        text.value = r.completion.text ?? ''
        meta.value = { provider: r.completion.provider, model: r.completion.model, tokens: Number(r.completion.usage?.total_tokens ?? 0), finish: r.completion.finish_reason }
        phase.value = 'done'
      } else if (r.task) {
        id.value = r.task.task_id ?? ''
        await check()
        if (phase.value === 'queued' || phase.value === 'running') {
          unlisten = useNotifications().onArrival((n) => {
            if ((n.data as Record<string, string> | undefined)?.task_id === id.value) void check()
          })
          poll = setInterval(() => void check(), 15_000)
        }
      }
    } catch (e) {
      error.value = e
      phase.value = 'failed'
    }
  }

  return { phase, text, id, meta, error, stream, queue, stop, regenerate, reset }
}
