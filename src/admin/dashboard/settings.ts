// What the dashboard page reads and how often: one place for the endpoint paths and field names the
// page depends on, handed to the page's script as JSON.

export interface DashboardSettings {
  /** One update (every endpoint read once) this often. */
  pollMs: number;
  /** The charts' window: samples older than this are dropped (kept in the page, not on the server). */
  windowMs: number;
  /** Destinations table: at most this many rows (busiest first after sorting and filtering). */
  maxHostRows: number;
  /**
   * The config generation's field: read from /stats?format=json, else from /ready (a JSON body's
   * field, or "<field>: N" / "<field>=N" in its text); "1" when neither has it.
   */
  configGenerationField: string;
  endpoints: {
    stats: string;
    ready: string;
    serverInfo: string;
    clusters: string;
    latency: string;
    plots: string;
  };
}

export const DASHBOARD_SETTINGS: Readonly<DashboardSettings> = {
  pollMs: 2000,
  windowMs: 10 * 60 * 1000,
  maxHostRows: 50,
  configGenerationField: 'config_generation',
  endpoints: {
    stats: '/stats?format=json',
    ready: '/ready',
    serverInfo: '/server_info',
    clusters: '/clusters?format=json',
    latency: '/latency?format=json',
    plots: '/latency?format=plots',
  },
};
