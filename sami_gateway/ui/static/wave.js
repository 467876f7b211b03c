// Waveform pictures, drawn in the browser from the decoded audio.

const COLUMNS = 1200;  // peaks kept per track; a canvas of any width draws from them

/** Decode audio bytes (an ArrayBuffer) to [{min, max}] per column, over every channel.
 *  An OfflineAudioContext decodes without the autoplay rules of a live AudioContext. */
export async function peaksOf(bytes) {
  const context = new OfflineAudioContext(1, 1, 44100);
  const audio = await context.decodeAudioData(bytes);
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
  return { peaks, duration: audio.duration };
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

/** Keep `canvas` drawn as its width changes (a rotated phone, a resized window). */
export function keepDrawn(canvas, peaks, colourName) {
  draw(canvas, peaks, colourName);
  let width = canvas.clientWidth;
  new ResizeObserver(() => {
    if (canvas.clientWidth !== width && canvas.clientWidth > 0) {
      width = canvas.clientWidth;
      draw(canvas, peaks, colourName);
    }
  }).observe(canvas);
}
