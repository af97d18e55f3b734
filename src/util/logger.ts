// Line-oriented logs on stderr: `<time> <level> <message> key=value ...`. One line per event, so
// operators can grep them and journald/kubectl keep them whole.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function formatValue(value: string | number | boolean): string {
  const text = String(value);
  return /[\s"=]/.test(text) ? JSON.stringify(text) : text;
}

export function createLogger(minLevel: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const emit = (level: LogLevel, message: string, fields?: LogFields): void => {
    if (ORDER[level] < ORDER[minLevel]) return;
    let line = `${new Date().toISOString()} ${level} ${message}`;
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
      }
    }
    write(line + '\n');
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}
