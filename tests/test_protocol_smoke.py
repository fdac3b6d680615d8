from protocol import Decoder, encode


def test_round_trip_one_byte_at_a_time() -> None:
    frames = encode({"type": "say", "text": "hi"}) + encode({"type": "who"})
    decoder = Decoder(4096)
    out = []
    for i in range(len(frames)):
        out += decoder.feed(frames[i : i + 1])
    assert out == [{"type": "say", "text": "hi"}, {"type": "who"}]
    assert decoder.pending == 0
