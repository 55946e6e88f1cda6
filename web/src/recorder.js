// Voice input for a model that takes audio (llama-server's UI has it too): the microphone recorded with
// MediaRecorder, then made a WAV file, which any audio projector takes (browsers record WebM/Opus or MP4, which it
// does not): 16 kHz mono 16-bit, what speech encoders read, 32 kB a second.

const RATE = 16_000

let recording = null // { recorder, stream, chunks }

export const isRecording = () => recording !== null

/** Start recording the microphone (the browser asks the user first); throws when there is none or it is refused. */
export async function startRecording() {
  if (recording) return
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  })
  const recorder = new MediaRecorder(stream)
  const chunks = []
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data) }
  recorder.start(100)
  recording = { recorder, stream, chunks }
}

/** Stop recording: the recording as a WAV file (a Blob), or null when nothing was recorded. */
export function stopRecording() {
  const current = recording
  recording = null
  if (!current) return Promise.resolve(null)
  return new Promise((resolve, reject) => {
    current.recorder.onstop = async () => {
      for (const track of current.stream.getTracks()) track.stop()
      try {
        const blob = new Blob(current.chunks, { type: current.recorder.mimeType })
        resolve(blob.size ? await toWav(blob) : null)
      } catch (err) {
        reject(err)
      }
    }
    current.recorder.stop()
  })
}

/** Any audio the browser decodes, as 16 kHz mono 16-bit PCM WAV. */
async function toWav(blob) {
  const decoded = await new AudioContext().decodeAudioData(await blob.arrayBuffer())
  const frames = Math.max(1, Math.ceil(decoded.duration * RATE))
  const offline = new OfflineAudioContext(1, frames, RATE) // mixes down and resamples
  const source = offline.createBufferSource()
  source.buffer = decoded
  source.connect(offline.destination)
  source.start()
  const samples = (await offline.startRendering()).getChannelData(0)
  const wav = new DataView(new ArrayBuffer(44 + samples.length * 2))
  const text = (at, s) => { for (let i = 0; i < s.length; i++) wav.setUint8(at + i, s.charCodeAt(i)) }
  text(0, 'RIFF')
  wav.setUint32(4, 36 + samples.length * 2, true)
  text(8, 'WAVEfmt ')
  wav.setUint32(16, 16, true) // the fmt chunk's size
  wav.setUint16(20, 1, true) // PCM
  wav.setUint16(22, 1, true) // mono
  wav.setUint32(24, RATE, true)
  wav.setUint32(28, RATE * 2, true) // bytes a second
  wav.setUint16(32, 2, true) // bytes a frame
  wav.setUint16(34, 16, true) // bits a sample
  text(36, 'data')
  wav.setUint32(40, samples.length * 2, true)
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]))
    wav.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true)
  }
  return new Blob([wav.buffer], { type: 'audio/wav' })
}
