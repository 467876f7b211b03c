// Waveform pictures, drawn in the browser from the decoded audio, one file at a time.

const COLUMNS = 1200;  // peaks kept per track; a canvas of any width draws from them
// 1,200 columns of even a short song need no more than 8,000 frames a second: a song decoded at
// 8 kHz takes 5.5 times less memory than at 44.1 kHz (ten minutes of stereo: 38 MB, not 212 MB).
export const DECODE_RATE = 8000;
export const MAX_DRAWN_BYTES = 200e6;  // a larger file gets no waveform: decoding it could exhaust a phone

let queue = Promise.resolve();

/** Run `task` once the tasks queued before it have ended: decodes never run side by side. */
export function oneAtATime(task) {
  const run = queue.then(task);
  queue = run.catch(() => {});
  return run;
}

/** An OfflineAudioContext at DECODE_RATE, or the lowest rate this browser accepts; it decodes without
 *  the autoplay rules of a live AudioContext and resamples what it decodes to its own rate. */
function decoder() {
  for (const rate of [DECODE_RATE, 22050, 44100]) {
    try {
      return new OfflineAudioContext(1, 1, rate);
    } catch {
      // an older browser: a higher rate
    }
  }
  throw new Error("this browser has no OfflineAudioContext");
}

/** The waveform of `blob` (audio bytes) as {peaks: [{min, max}] per column over every channel,
 *  duration}, decoded after the blobs queued before it; skipped if `signal` aborted meanwhile. */
export function peaksOfBlob(blob, signal) {
  return oneAtATime(async () => {
    if (signal && signal.aborted) throw new DOMException("cancelled", "AbortError");
    return peaksOf(await decoder().decodeAudioData(await blob.arrayBuffer()));
  });
}

/** [{min, max}] per column of a decoded AudioBuffer, over every channel, and its duration. */
export function peaksOf(audio) {
  const channels = Array.from({ length: audio.numberOfChannels }, (_, i) => audio.getChannelData(i));
  const frames = audio.length;
  const columns = Math.max(1, Math.min(COLUMNS, frames));
  const peaks = new Array(columns);
  for (let column = 0; column < columns; column++) {
    const start = Math.floor((column * frames) / columns);
    const end = Math.max(start + 1, Math.floor(((column + 1) * frames) / columns));
    let min = 0, max = 0;
    for (const data of channels) {
      for (let i = start; i < end; i++) {
        const value = data[i];
        if (value < min) min = value;
        else if (value > max) max = value;
      }
    }
    peaks[column] = { min: Math.max(-1, min), max: Math.min(1, max) };
  }
  return { peaks, duration: audio.duration, rate: audio.sampleRate };
}

/** Draw `peaks` across `canvas` at its current size, in the CSS colour `--wave` or `--wave-mix`. */
export function draw(canvas, peaks, colourName = "--wave") {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  context.fillStyle = getComputedStyle(canvas).getPropertyValue(colourName).trim() || "#1f5f8b";
  const middle = height / 2;
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x * peaks.length) / width);
    const to = Math.max(from + 1, Math.floor(((x + 1) * peaks.length) / width));
    let min = 0, max = 0;
    for (let i = from; i < to; i++) {
      min = Math.min(min, peaks[i].min);
      max = Math.max(max, peaks[i].max);
    }
    const top = middle - max * middle;
    context.fillRect(x, top, 1, Math.max(1, (max - min) * middle));
  }
  canvas.dataset.drawn = "true";
}

/** Keep `canvas` drawn as its width changes (a rotated phone, a resized window); returns the
 *  ResizeObserver, to disconnect when the canvas goes. */
export function keepDrawn(canvas, peaks, colourName) {
  draw(canvas, peaks, colourName);
  let width = canvas.clientWidth;
  const observer = new ResizeObserver(() => {
    if (canvas.clientWidth !== width && canvas.clientWidth > 0) {
      width = canvas.clientWidth;
      draw(canvas, peaks, colourName);
    }
  });
  observer.observe(canvas);
  return observer;
}
