// GET / answers a browser with the dashboard and curl (Accept: */*) with the plain route list:
// only a client that names text/html (or XHTML) with a non-zero quality gets the page.

const HTML_TYPES = new Set(['text/html', 'application/xhtml+xml']);

export function acceptsHtml(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  return accept.split(',').some((entry) => {
    const [type = '', ...params] = entry.split(';').map((part) => part.trim().toLowerCase());
    if (!HTML_TYPES.has(type)) return false;
    const q = params.find((p) => p.startsWith('q='));
    // A malformed q counts as 1 (RFC 9110 clients send numbers; be lenient, it only picks a format).
    const quality = q === undefined ? 1 : Number(q.slice(2));
    return !(quality <= 0);
  });
}
