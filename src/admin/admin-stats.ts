// The admin server's own counters, shown in /stats and Prometheus beside the data plane's. They
// live on the JS thread (the admin server is not a worker), so they are plain numbers.

export const ADMIN_STAT_NAMES = [
  /** Requests that reached routing (well-formed enough to have a method and a target). */
  'admin_rq_total',
  /** Malformed requests answered 400: unparsable request line or target, bad headers. */
  'admin_rq_bad',
  /** Requests refused 413 (body over the limit) or 431 (headers over the limit). */
  'admin_rq_too_large',
  /** Requests refused 403: a Host name not in admin.allowed_hosts, or a POST sent by a web page. */
  'admin_rq_refused',
  /** Connections closed because the headers or the whole request took too long (408). */
  'admin_rq_timeout',
  /** Connections refused because admin connections were at their maximum. */
  'admin_cx_overflow',
  /** Connections closed because they sent more requests ahead of the answers than the admin queues. */
  'admin_cx_pipeline_overflow',
  /** Open admin connections (a gauge). */
  'admin_cx_active',
] as const;

export type AdminStatName = (typeof ADMIN_STAT_NAMES)[number];

export class AdminStats {
  private readonly values: Record<AdminStatName, number> = Object.fromEntries(ADMIN_STAT_NAMES.map((n) => [n, 0])) as Record<
    AdminStatName,
    number
  >;

  inc(name: AdminStatName, by = 1): void {
    this.values[name] += by;
  }

  snapshot(): Record<AdminStatName, number> {
    return { ...this.values };
  }
}
