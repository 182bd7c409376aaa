package mcptest

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/png"
)

// TinyPNG is a valid 1×1 PNG, the image content of the "image" tool and the
// body of BlobURI.
var TinyPNG = func() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	img.Set(0, 0, color.NRGBA{R: 0x2a, G: 0x7a, B: 0xe2, A: 0xff})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic(err)
	}
	return b.Bytes()
}()

// TinyWAV is a valid WAV file (8 kHz, 8-bit mono, 8 samples of silence), the
// audio content of the "audio" tool.
var TinyWAV = func() []byte {
	const rate, samples = 8000, 8
	var b bytes.Buffer
	w := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("RIFF")
	w(uint32(36 + samples))
	b.WriteString("WAVEfmt ")
	w(uint32(16))   // fmt chunk size
	w(uint16(1))    // PCM
	w(uint16(1))    // mono
	w(uint32(rate)) // sample rate
	w(uint32(rate)) // byte rate
	w(uint16(1))    // block align
	w(uint16(8))    // bits per sample
	b.WriteString("data")
	w(uint32(samples))
	b.Write(bytes.Repeat([]byte{0x80}, samples))
	return b.Bytes()
}()
