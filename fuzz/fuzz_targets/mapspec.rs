//! Map-spec parsing must accept or reject any string without panicking, and
//! whatever it accepts must print back to a spec that parses to the same map.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = s.parse::<idfuse_idmap::IdMap>() {
        let again: idfuse_idmap::IdMap = map
            .to_string()
            .parse()
            .expect("a printed map parses again");
        assert_eq!(map.to_string(), again.to_string());
    }
    let _ = s.parse::<idfuse_idmap::MapSource>();
});
