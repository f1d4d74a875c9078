//! TEMPORARY: signatures of the codec being written on the `codec` branch.
#![allow(unused_variables)]
use super::*;
pub struct DecodedPacket {
    pub messages: Vec<Message>,
    pub malformed: usize,
}
pub fn encode_message(msg: &Message) -> Vec<u8> {
    todo!()
}
pub fn decode_packet(buf: &[u8], opts: &ReadOptions) -> Result<DecodedPacket, DecodeError> {
    todo!()
}
pub fn encode_packet(msgs: &[Vec<u8>], opts: &WriteOptions, nonce: [u8; 12]) -> Vec<u8> {
    todo!()
}
pub fn encode_stream(msg: &StreamMessage, opts: &WriteOptions, nonce: [u8; 12]) -> Vec<u8> {
    todo!()
}
pub fn decode_stream(
    buf: &[u8],
    opts: &ReadOptions,
) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
    todo!()
}
