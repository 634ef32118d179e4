// Generated text is Markdown from a model: rendered with raw HTML switched off (tags come out
// as text) and markdown-it's link check (no `javascript:`, `vbscript:`, `file:` or non-image
// `data:` URLs), links opened away from the console. Nothing the model writes can run here.
import MarkdownIt from 'markdown-it'

const md = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: false })
const defaultLink = md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options))
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  const token = tokens[idx]!
  token.attrSet('rel', 'noopener noreferrer nofollow')
  token.attrSet('target', '_blank')
  return defaultLink(tokens, idx, options, env, self)
}

export function renderMarkdown(text: string): string {
  return md.render(text)
}

/** An excerpt as prose: Markdown's marks (headings, bullets, emphasis, code, links) taken out;
 * an underscore inside a word (`OPENAI_API_KEY`) stays. */
export function plainText(text: string): string {
  return text
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/(^|\s)(#{1,6}|[-*+>]|\d+\.)\s+/g, '$1')
    .replace(/[*`]+|~~/g, '')
    .replace(/(^|[\s(])(_{1,2})([^_\s](?:.*?[^_\s])?)\2(?=[\s).,!?:;]|$)/g, '$1$3')
    .replace(/\s+/g, ' ')
    .trim()
}
