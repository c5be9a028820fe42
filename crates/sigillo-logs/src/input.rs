//! Reading logs: files, directories, rotated `.gz`/`.zst`, stdin; format detection; bad input reported with file and line, skipped and counted.
