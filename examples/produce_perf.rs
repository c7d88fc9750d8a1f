//! A first, simple throughput probe with librdkafka (until `odradek-bench` exists, issue 3):
//! produces N records of S bytes with acks=all and reports records/s and MB/s, counting only
//! records whose delivery report succeeded.
//!
//!     cargo run --release --example produce_perf -- 127.0.0.1:9092 perf-topic 1000000 1024
//!
//! Pin it away from the broker with `taskset -c 1`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

struct Counter {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}
impl ClientContext for Counter {}
impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.get(2).cloned().unwrap_or_else(|| "perf".into());
    let count: u64 = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let acks = args.get(5).cloned().unwrap_or_else(|| "all".into());
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: BaseProducer<Counter> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", &acks)
        .set("linger.ms", "1")
        .set("batch.size", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Counter {
            ok: ok.clone(),
            failed: failed.clone(),
        })
        .expect("producer");
    // Payload: pseudo-random bytes (incompressible), varied per record.
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut payload = vec![0u8; size];
    for b in payload.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let start = Instant::now();
    for i in 0..count {
        payload[..8.min(size)].copy_from_slice(&i.to_le_bytes()[..8.min(size)]);
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to(&topic).payload(&payload[..])) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < count {
        producer.poll(Duration::from_millis(10));
        if start.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    let _ = producer.flush(Duration::from_secs(10));
    let secs = start.elapsed().as_secs_f64();
    let delivered = ok.load(Ordering::Relaxed);
    println!(
        "{{\"records\":{count},\"delivered\":{delivered},\"failed\":{},\"record_bytes\":{size},\"acks\":\"{acks}\",\"seconds\":{secs:.3},\"records_per_s\":{:.0},\"mb_per_s\":{:.1}}}",
        failed.load(Ordering::Relaxed),
        delivered as f64 / secs,
        delivered as f64 * size as f64 / secs / 1e6
    );
}
