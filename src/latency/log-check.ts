// Checks an HdrHistogram interval log before hdr-histogram-js decodes it, so that a damaged or
// hostile file (`splicegate report --log FILE`) ends in an error naming its line instead of a hang
// or an out-of-memory abort. The library trusts each histogram's encoding: a payload length
// longer than the payload makes it read on past the end for up to 2^31 steps, a run of empty
// buckets 2^40 long makes it count through every one of them, and it inflates the compressed
// bytes without a bound. So each histogram line is decoded here first, with every length checked.
//
// The encoding (HdrHistogram's "V2" compressed form, as hdr-histogram-js writes it):
//   base64( cookie:int32 (0x1c849304 | word size bits), compressedLength:int32, zlib data )
//   zlib data inflates to:
//     cookie:int32 (0x1c849303 | ...), payloadLength:int32, normalizingIndexOffset:int32,
//     significantDigits:int32, lowest:int64, highest:int64, conversionRatio:double, payload
//   payload: ZigZag LEB128 counts (at most 9 bytes each); a negative one is a run of empty buckets.

import { inflateSync } from 'node:zlib';

const COMPRESSED_COOKIE_BASE = 0x1c849304;
const COOKIE_BASE = 0x1c849303;
const HEADER_BYTES = 40;
/**
 * Above any histogram HdrHistogram can lay out (5 significant digits up to 2^63: about 6.2 million
 * buckets; splicegate's own, 3 digits up to an hour, have 23,552), and small enough that walking
 * them takes milliseconds.
 */
export const MAX_BUCKETS = 1 << 24;
/** The inflated size of a histogram of MAX_BUCKETS buckets at most 9 bytes each, plus its header. */
const MAX_INFLATED_BYTES = HEADER_BYTES + 9 * MAX_BUCKETS;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Why one encoded histogram cannot be decoded safely, or null when it can. */
export function encodedHistogramProblem(base64: string): string | null {
  const text = base64.trim();
  if (text.length === 0) return 'no histogram after the timestamps';
  if (text.length % 4 !== 0 || !BASE64.test(text)) return 'the histogram is not base64';
  const data = Buffer.from(text, 'base64');
  if (data.length < 8) return 'the histogram is shorter than its header';
  if ((data.readInt32BE(0) & ~0xf0) !== COMPRESSED_COOKIE_BASE) return 'not a compressed V2 histogram (unknown cookie)';
  const compressedLength = data.readInt32BE(4);
  if (compressedLength < 0 || compressedLength > data.length - 8) return 'its compressed length runs past its end';
  let raw: Buffer;
  try {
    raw = inflateSync(data.subarray(8, 8 + compressedLength), { maxOutputLength: MAX_INFLATED_BYTES });
  } catch (err) {
    const tooLarge = err instanceof RangeError || (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE';
    return tooLarge ? `it inflates to more than ${MAX_INFLATED_BYTES} bytes` : `its compressed data is damaged (${(err as Error).message})`;
  }
  if (raw.length < HEADER_BYTES) return 'the inflated histogram is shorter than its header';
  if ((raw.readInt32BE(0) & ~0xf0) !== COOKIE_BASE) return 'not a V2 histogram (unknown inner cookie)';
  const payloadLength = raw.readInt32BE(4);
  if (payloadLength < 0 || payloadLength > raw.length - HEADER_BYTES) return 'its payload length runs past its end';
  return bucketRunProblem(raw, HEADER_BYTES, HEADER_BYTES + payloadLength);
}

/** Walks the counts as the decoder will, checking that they stay within MAX_BUCKETS buckets. */
function bucketRunProblem(raw: Buffer, start: number, end: number): string | null {
  let buckets = 0;
  let at = start;
  while (at < end) {
    // LEB128 as hdr-histogram-js reads it: 7 bits a byte, at most 9 bytes. Magnitudes only matter
    // here, so a double (exact to 2^53, and monotone beyond) is enough.
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 9; ++i) {
      if (at >= raw.length) return 'a count runs past the end of the histogram';
      const b = raw[at++];
      value += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) break;
    }
    // ZigZag: even values are counts (one bucket each), odd ones a run of (value + 1) / 2 empty buckets.
    buckets += value % 2 === 0 ? 1 : (value + 1) / 2;
    if (buckets > MAX_BUCKETS) return `its counts cover more than ${MAX_BUCKETS} buckets`;
  }
  return null;
}

/**
 * The latest time a log may name, in seconds since the epoch (about the year 5138). The reader adds
 * an interval's start to the log's base time, and the report turns the sum into dates and steps
 * along it in seconds: past Date's range (8.64e12 s) that throws, and from about 1e17 s on a step
 * of a second no longer changes the number, so the time axis would never end.
 */
const MAX_TIME_SEC = 1e11;

function timeProblem(text: string | undefined, what: string): string | null {
  const value = Number.parseFloat(text ?? '');
  if (!Number.isFinite(value)) return `${what} is not a number`;
  if (value < 0 || value > MAX_TIME_SEC) return `${what} is outside 0 to ${MAX_TIME_SEC} seconds`;
  return null;
}

/**
 * The first problem of an interval log's lines as hdr-histogram-js' HistogramLogReader will read
 * them, as "line N: ...", or null: the times (the StartTime and BaseTime comments, each interval's
 * start and length) and each histogram. Lines the reader skips (other comments, the legend, lines
 * without a comma) are not looked at.
 */
export function intervalLogProblem(content: string): string | null {
  const lines = content.split(/\r\n|\r|\n/g);
  for (let i = 0; i < lines.length; ++i) {
    const line = lines[i];
    let problem: string | null = null;
    if (line.startsWith('#[StartTime:') || line.startsWith('#[BaseTime:')) {
      // The reader takes what follows the first space; one that is not a number it ignores.
      const value = line.split(' ')[1];
      if (Number.isFinite(Number.parseFloat(value ?? ''))) problem = timeProblem(value, 'the log\'s time');
    } else if (!line.startsWith('#') && !line.startsWith('"StartTimestamp"') && line.includes(',')) {
      const tokens = line.split(',');
      if (tokens[0].startsWith('Tag=')) tokens.shift();
      const [start, length, , histogram] = tokens;
      problem = timeProblem(start, 'the interval start') ?? timeProblem(length, 'the interval length') ?? encodedHistogramProblem(histogram ?? '');
    }
    if (problem !== null) return `line ${i + 1}: ${problem}`;
  }
  return null;
}
