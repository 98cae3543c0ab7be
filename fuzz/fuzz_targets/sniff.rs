//! Everything the proxy parses before hyper takes over: PROXY v1/v2 detection and parsing, and
//! the header-less `/ping` sniffing, fed the bytes in one piece and split at every point.
#![no_main]

use elb_ws_proxy::proxy_header::{sniff, Sniff, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = sniff(data);
    if let Sniff::Header { len, .. } = &whole {
        assert!(*len <= data.len());
    }
    if matches!(whole, Sniff::NeedMore) {
        assert!(data.len() < MAX_HEADER_LEN);
    }
    // Reading in pieces must never decide differently from reading it whole: a prefix either
    // needs more bytes or already reaches the same verdict.
    for cut in 0..data.len().min(128) {
        let part = sniff(&data[..cut]);
        if part != Sniff::NeedMore && !matches!(part, Sniff::Invalid(_)) {
            assert_eq!(std::mem::discriminant(&part), std::mem::discriminant(&whole), "cut at {cut}");
        }
    }
});
