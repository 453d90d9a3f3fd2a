//! The Jupyter wire side of a kernel: which channel a message came on, decoding a
//! signed multipart message into JSON, and the task that reads one socket.

use jupyter_protocol::JupyterMessage;
use jupyter_zmq_client as jzc;
use serde_json::Value;
use tokio::sync::mpsc;

/// The channel a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Shell,
    IoPub,
    Control,
}

/// A message from the kernel, decoded as JSON.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub channel: Channel,
    pub msg_type: String,
    pub parent_id: Option<String>,
    pub content: Value,
}

pub(super) enum Event {
    Message(Incoming),
    /// A message that could not be verified or decoded.
    Bad(Channel, String),
    /// The socket's reader stopped.
    Closed,
}

pub(super) async fn read_loop<S: zeromq::SocketRecv>(
    mut conn: jzc::Connection<S>,
    channel: Channel,
    tx: mpsc::UnboundedSender<Event>,
) {
    loop {
        let zmq = match conn.socket.recv().await {
            Ok(m) => m,
            Err(_) => {
                let _ = tx.send(Event::Closed);
                return;
            }
        };
        let event = match jzc::RawMessage::from_multipart(zmq, &conn.mac) {
            Ok(raw) => decode(channel, &raw.jparts),
            Err(e) => Event::Bad(channel, e.to_string()),
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

pub(super) fn decode<B: AsRef<[u8]>>(channel: Channel, parts: &[B]) -> Event {
    if parts.len() < 4 {
        return Event::Bad(
            channel,
            format!("{} message parts, expected 4", parts.len()),
        );
    }
    let json = |i: usize| serde_json::from_slice::<Value>(parts[i].as_ref());
    match (json(0), json(1), json(3)) {
        (Ok(header), parent, Ok(content)) => Event::Message(Incoming {
            channel,
            msg_type: header["msg_type"].as_str().unwrap_or_default().to_string(),
            parent_id: parent
                .ok()
                .and_then(|p| p["msg_id"].as_str().map(str::to_string)),
            content,
        }),
        (Err(e), _, _) | (_, _, Err(e)) => Event::Bad(channel, format!("undecodable JSON: {e}")),
    }
}

pub(super) fn stamp(mut msg: JupyterMessage) -> JupyterMessage {
    msg.header.username = "aula-runner".into();
    msg
}
