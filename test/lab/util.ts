// Small typed helpers shared by the lab and the integration tests.

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parse a line as a JSON object, or return null. */
export function parseJsonObject(line: string): JsonObject | null {
  const t = line.trim();
  if (!t.startsWith('{')) return null;
  try {
    const v: unknown = JSON.parse(t);
    return isJsonObject(v) ? v : null;
  } catch {
    return null;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface WaitOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** What is awaited, for the error message. */
  what: string;
  /** Extra diagnostics appended to the timeout error. */
  diagnostics?: () => string | Promise<string>;
}

/** Poll `check` until it returns a non-undefined value; throw with diagnostics at the deadline. */
export async function waitFor<T>(check: () => Promise<T | undefined> | T | undefined, opts: WaitOptions): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 100;
  let lastError: unknown = null;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
      lastError = null;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      let diag = '';
      if (opts.diagnostics) {
        try {
          diag = await opts.diagnostics();
        } catch (e) {
          diag = `(diagnostics failed: ${String(e)})`;
        }
      }
      const last = lastError ? `\nlast error: ${lastError instanceof Error ? lastError.message : String(lastError)}` : '';
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${last}${diag ? `\n${diag}` : ''}`);
    }
    await sleep(interval);
  }
}

/** Race a promise against a deadline. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Keep the tail of a growing text buffer bounded. */
export function appendBounded(buf: string, add: string, max: number): string {
  const s = buf + add;
  return s.length > max ? s.slice(s.length - max) : s;
}

export function tail(text: string, maxChars = 4000): string {
  return text.length > maxChars ? `...${text.slice(text.length - maxChars)}` : text;
}
