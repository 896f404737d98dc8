//! RabbitMQ for `ixn-bench peer` (AMQP 0-9-1 through lapin): persistent
//! messages on a durable classic queue or a quorum queue; producers use
//! publisher confirms with `--window` publishes unconfirmed at a time (an
//! item counts when its confirm arrives: the broker has it on disk), a
//! consumer takes with prefetch `--window` and acknowledges each delivery
//! (manual ack). A cycle counts when its acknowledgement is sent; the
//! read-back afterwards consumes what is left, so an acknowledgement the
//! broker lost would show as a duplicate.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{histogram, item_id, Backlog, Done, Items, PeerArgs};

const QUEUE: &str = "ixn-bench-q";

fn block_on<T>(f: impl Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

async fn channel(a: &PeerArgs) -> Result<(Connection, Channel), String> {
    let conn = Connection::connect(&a.addr, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {}: {e}", a.addr))?;
    let ch = conn.create_channel().await.map_err(|e| format!("RabbitMQ channel: {e}"))?;
    Ok((conn, ch))
}

fn queue_args(quorum: bool) -> FieldTable {
    let mut t = FieldTable::default();
    if quorum {
        t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    t
}

/// Deletes and declares the queue (durable; quorum when asked).
pub(super) fn reset(a: &PeerArgs, quorum: bool) -> Result<(), String> {
    block_on(async {
        let (conn, ch) = channel(a).await?;
        let _ = ch.queue_delete(QUEUE.into(), QueueDeleteOptions::default()).await;
        let ch = if ch.status().connected() { ch } else { conn.create_channel().await.map_err(|e| e.to_string())? };
        ch.queue_declare(QUEUE.into(), QueueDeclareOptions { durable: true, ..Default::default() }, queue_args(quorum))
            .await
            .map_err(|e| format!("queue.declare: {e}"))?;
        let _ = conn.close(200, "done".into()).await;
        Ok(())
    })
}

pub(super) fn producer(
    a: &PeerArgs,
    p: usize,
    start: Instant,
    deadline: Instant,
    backlog: &Backlog,
) -> Result<Done, String> {
    block_on(async {
        let (_conn, ch) = channel(a).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| format!("confirm.select: {e}"))?;
        let mut items = Items::new(a, p, start);
        let props = BasicProperties::default().with_delivery_mode(2);
        let mut hist = histogram();
        let mut ids = Vec::new();
        let mut inflight = VecDeque::new();
        loop {
            let open = Instant::now() < deadline;
            while open && inflight.len() < a.window {
                let Some((id, item)) = items.take(a, backlog) else { break };
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        QUEUE.into(),
                        BasicPublishOptions::default(),
                        item.as_bytes(),
                        props.clone(),
                    )
                    .await
                    .map_err(|e| format!("basic.publish: {e}"))?;
                inflight.push_back((id, Instant::now(), confirm));
            }
            let Some((id, sent, confirm)) = inflight.pop_front() else {
                if !open {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
                continue;
            };
            let c = confirm.await.map_err(|e| format!("publisher confirm: {e}"))?;
            if !c.is_ack() {
                return Err(format!("item {id} was not confirmed: {c:?}"));
            }
            hist.record(sent.elapsed().as_micros().max(1) as u64).ok();
            ids.push(id);
        }
        let in_time = ids.len();
        Ok(Done { ids, in_time, hist: Some(hist) })
    })
}

pub(super) fn consumer(a: &PeerArgs, start: Instant, deadline: Instant, backlog: &Backlog) -> Result<Done, String> {
    consume(a, start, deadline, backlog, None)
}

/// Takes and acknowledges deliveries until the deadline has passed and
/// every item produced is consumed (`backlog` at 0), or, with `count`,
/// until that many came. A watcher thread cancels the consumer then, which
/// ends its stream: it checks the deadline and the backlog itself, since a
/// paced load may leave nothing to deliver after the deadline (no delivery
/// would then wake the loop below to notice it is finished).
fn consume(
    a: &PeerArgs,
    start: Instant,
    deadline: Instant,
    backlog: &Backlog,
    count: Option<usize>,
) -> Result<Done, String> {
    std::thread::scope(|scope| consume_in(a, start, deadline, backlog, count, scope))
}

/// Sets the flag when dropped: the watcher ends on every way out.
struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn consume_in<'s>(
    a: &PeerArgs,
    start: Instant,
    deadline: Instant,
    backlog: &'s Backlog,
    count: Option<usize>,
    scope: &'s std::thread::Scope<'s, '_>,
) -> Result<Done, String> {
    block_on(async {
        let (_conn, ch) = channel(a).await?;
        ch.basic_qos(a.window.min(u16::MAX as usize) as u16, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let mut consumer = ch
            .basic_consume(QUEUE.into(), "ixn-bench".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| format!("basic.consume: {e}"))?;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _ends_watcher = SetOnDrop(done.clone());
        {
            let (ch, done) = (ch.clone(), done.clone());
            let drained = move || {
                done.load(std::sync::atomic::Ordering::Relaxed)
                    || (count.is_none()
                        && Instant::now() > deadline
                        && backlog.n.load(std::sync::atomic::Ordering::Relaxed) <= 0)
            };
            scope.spawn(move || {
                while !drained() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = block_on(ch.basic_cancel("ixn-bench".into(), Default::default()));
            });
        }
        let mut hist = histogram();
        let mut ids = Vec::new();
        let mut in_time = 0;
        let finished = |ids: &Vec<String>| match count {
            Some(n) => ids.len() >= n,
            None => Instant::now() > deadline && backlog.n.load(std::sync::atomic::Ordering::Relaxed) <= 0,
        };
        // Nothing to wait for at all.
        if finished(&ids) {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(|e| format!("delivery: {e}"))?;
            delivery.ack(BasicAckOptions::default()).await.map_err(|e| format!("basic.ack: {e}"))?;
            let (id, sent_us) = item_id(&delivery.data);
            hist.record((start.elapsed().as_micros() as u64).saturating_sub(sent_us).max(1)).ok();
            ids.push(id);
            backlog.add(-1);
            if Instant::now() <= deadline {
                in_time += 1;
            }
            if finished(&ids) {
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(Done { ids, in_time, hist: Some(hist) })
    })
}

/// Every item id the queue still holds (consumed now, and acknowledged).
pub(super) fn left(a: &PeerArgs) -> Result<Vec<String>, String> {
    let n = block_on(async {
        let (_conn, ch) = channel(a).await?;
        let q = ch
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.declare (passive): {e}"))?;
        Ok::<_, String>(q.message_count() as usize)
    })?;
    let now = Instant::now();
    let none = Backlog { n: 0.into(), max: i64::MAX };
    let mut b = a.clone();
    b.window = 1000;
    Ok(consume(&b, now, now, &none, Some(n))?.ids)
}
