use farmlog_engine::{Log, LogOptions, NewRecord};

fn rec(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        term: 1,
        group: 0,
        kind: 0,
        payload,
    }
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 64 << 10,
        disk_reserve_bytes: 0,
        ..LogOptions::default()
    };
    {
        let log = Log::open(dir.path(), options.clone()).unwrap();
        for i in 0..2000u32 {
            let payload = i.to_le_bytes().repeat((i % 50) as usize + 1);
            let last = log.append(&[rec(&payload)]).unwrap();
            assert_eq!(last, i as u64 + 1);
        }
        assert_eq!(log.read(1).unwrap().payload(), 0u32.to_le_bytes());
        log.truncate_after(1500).unwrap();
        assert_eq!(log.last_index(), Some(1500));
        log.append(&[rec(b"after truncate")]).unwrap();
        log.purge_before(100).unwrap();
        assert_eq!(log.first_index(), 100);
        log.seal().unwrap();
        assert!(log.compress_cold(1).unwrap() > 0);
    }
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.first_index(), 100);
    assert_eq!(log.last_index(), Some(1501));
    assert_eq!(log.read(1501).unwrap().payload(), b"after truncate");
    let mut n = 0;
    for (i, r) in log.range(..).enumerate() {
        let r = r.unwrap();
        assert_eq!(r.index(), 100 + i as u64);
        if r.index() <= 1500 {
            let k = (r.index() - 1) as u32;
            assert_eq!(r.payload(), k.to_le_bytes().repeat((k % 50) as usize + 1));
        }
        n += 1;
    }
    assert_eq!(n, 1402);
    println!("{:?}", log.stats());
    log.truncate_after(150).unwrap();
    assert_eq!(log.last_index(), Some(150));
    drop(log);
    let log = Log::open(
        dir.path(),
        LogOptions {
            segment_bytes: 64 << 10,
            disk_reserve_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    assert_eq!(log.last_index(), Some(150));
    assert_eq!(
        log.read(150).unwrap().payload(),
        149u32.to_le_bytes().repeat((149 % 50) as usize + 1)
    );
}
