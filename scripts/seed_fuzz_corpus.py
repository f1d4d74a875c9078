"""Seed fuzz/corpus/<target>/ from the golden fixtures plus a few hand-made edge cases.

  python3 scripts/seed_fuzz_corpus.py      (needs `pip install msgpack cryptography`)
Uses the read-only spec helpers in /work/shared/spec/tools/mlproto.py to peel layers.
"""
import base64, glob, hashlib, os, struct, sys
sys.path.insert(0, '/work/shared/spec/tools')
import mlproto as m

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
FIX = os.path.join(ROOT, 'crates/vassal-memberlist/tests/fixtures')
KEY = base64.b64decode(open(os.path.join(FIX, 'encryption_key.txt')).read().strip())

def put(target, data, name=None):
    d = os.path.join(ROOT, 'fuzz/corpus', target); os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    open(os.path.join(d, name), 'wb').write(data)

def leaves(buf, lzw):
    t = buf[0]
    if t == 12: return leaves(buf[5:], lzw)
    if t == 9:
        b = m.dec(m.unpack_stream(buf[1:])[0])['Buf']; lzw.append(b)
        return leaves(m.lzw_decompress(b), lzw)
    if t == 7: return [x for p in m.split_compound(buf[1:]) for x in leaves(p, lzw)]
    return [buf]

for path in sorted(glob.glob(os.path.join(FIX, '*.hex'))):
    name = os.path.basename(path)[:-4]
    raw = bytes.fromhex(open(path).read().strip())
    if name.startswith('enc_'):
        put('keyring_decrypt', raw if name.startswith('enc_udp') else raw[5:], name)
        (put('decode_stream', raw, name) if 'stream' in name else put('decode_packet', raw, name))
        continue
    if name.startswith('stream_'):
        put('decode_stream', raw, name)
        put('lzw_decompress', m.dec(m.unpack_stream(raw[1:])[0])['Buf'], name)
        continue
    put('decode_packet', raw, name)
    lzw = []
    for i, leaf in enumerate(leaves(raw, lzw)):
        put('decode_message', leaf, '%s_%d' % (name, i))
    for i, b in enumerate(lzw):
        put('lzw_decompress', b, '%s_%d' % (name, i))

# Hand-made edge cases.
ping = bytes([0]) + m.pack({'Node': 'x', 'SeqNo': 1})
put('decode_packet', b'', 'empty')
put('decode_packet', b'\xf4\x04fuzz' + ping, 'labelled_ping')
put('decode_packet', m.compound([ping, ping])[:-3], 'truncated_compound')
put('decode_packet', m.compound([m.compound([ping]), m.compress_msg(ping)]), 'nested_compound')
put('decode_packet', m.encrypt(KEY, ping, vsn=0), 'envelope_v0')
put('decode_packet', b'\x09\x82\xa4Algo\x00\xa3Buf\xdb\xff\xff\xff\xff', 'huge_compress_len')
put('decode_stream', ping, 'plain_ping')
put('decode_stream', bytes([8]) + m.pack({'UserMsgLen': 3}) + b'abc', 'user_msg')
put('decode_stream', bytes([13]) + m.pack({'Error': 'boom'}), 'err_resp')
put('decode_stream', bytes([6]) + m.pack({'Join': False, 'Nodes': 0, 'UserStateLen': 0}), 'empty_pushpull')
put('decode_stream', bytes([6]) + m.pack({'Join': False, 'Nodes': 2**31, 'UserStateLen': 0}), 'huge_nodes')
put('decode_stream', b'\x0a\xff\xff\xff\xff', 'huge_encrypted_len')
put('decode_stream', m.stream_encrypt(KEY, m.compress_msg(ping)), 'encrypted_compressed_ping')
put('decode_message', b'\x04\x81\xa3Vsn\x96\x01\x05\x02\x02\x05\x05', 'vsn_int_array')
put('decode_message', b'\x02\x81\xa1x' + b'\x91' * 100, 'deep_nesting')
put('lzw_decompress', m.lzw_compress(b'hello hello hello'), 'hello_clear')
put('lzw_decompress', m.lzw_compress(b'hello hello hello', initial_clear=False), 'hello_no_clear')
put('lzw_decompress', m.lzw_compress(bytes(range(256)) * 40), 'table_reset')
put('keyring_decrypt', m.encrypt(KEY, b'0123456789abcdef', vsn=0), 'envelope_v0')
put('keyring_decrypt', b'\x01' + b'\x00' * 28, 'minimum_v1')
