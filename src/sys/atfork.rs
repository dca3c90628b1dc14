//! What decides between glibc's `fork` and `_Fork`: code that may have
//! registered fork handlers (`pthread_atfork`), which only `fork` runs,
//! and other threads, whose locks only `fork` takes care of. Without
//! either, the two do the same, and `_Fork` spares the new process the
//! pages `fork`'s bookkeeping writes (3 copy-on-write faults per process).

use std::ffi::{CStr, c_char, c_int, c_void};

/// One entry of an object's dynamic section (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

/// One relocation with addend (`Elf64_Rela`).
#[repr(C)]
struct Rela {
    offset: u64,
    info: u64,
    addend: i64,
}

const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
/// `st_shndx` of a symbol the object uses but does not define.
const SHN_UNDEF: u16 = 0;

/// The functions a fork handler is registered through: `pthread_atfork`
/// (glibc 2.28 and later links a stub of it into each object that calls
/// it) ends in `__register_atfork`.
const REGISTRARS: [&CStr; 2] = [c"__register_atfork", c"pthread_atfork"];

/// Whether fork handlers may be registered in this process: this crate's
/// own (the caller's side registers one with its first reactor), or those
/// of another loaded object that uses `pthread_atfork` or
/// `__register_atfork` from libc. The others are read from each object's
/// relocations, which every call to a function of another object has (at
/// load, or at first call through the PLT); so this holds for the objects
/// loaded now, not for code loaded later.
pub fn handlers_possible() -> bool {
    if crate::caller::state::watches_forks() {
        return true;
    }
    let mut found = false;
    // SAFETY: dl_iterate_phdr calls `visit` with each loaded object's
    // program headers, valid during the call; `found` outlives it.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut found).cast()) };
    found
}

/// Stops the walk (returns 1) at the first object that imports a
/// registrar. The object holding this code is skipped: its import serves
/// the handler [`handlers_possible`] asks the caller's side about.
unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    found: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` whose program
    // headers, dynamic section, tables and relocations are mapped (they
    // are part of the loaded object) for the duration of the call.
    unsafe {
        let info = &*info;
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
        let base = info.dlpi_addr as usize;
        let here = visit as *const () as usize;
        let holds_this_code = phdrs.iter().any(|p| {
            let start = base + p.p_vaddr as usize;
            p.p_type == libc::PT_LOAD && (start..start + p.p_memsz as usize).contains(&here)
        });
        let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
            return 0;
        };
        if holds_this_code {
            return 0;
        }
        if imports_registrar(base, dynamic.p_vaddr as usize) {
            *found.cast::<bool>() = true;
            return 1;
        }
        0
    }
}

/// Whether the object loaded at `base`, whose dynamic section is at
/// `base + dynamic`, has a relocation against an undefined registrar.
///
/// # Safety
/// `base` and `dynamic` describe a loaded object (see [`visit`]).
unsafe fn imports_registrar(base: usize, dynamic: usize) -> bool {
    let (mut strtab, mut symtab) = (0usize, 0usize);
    let (mut rela, mut relasz, mut jmprel, mut pltrelsz) = (0usize, 0usize, 0usize, 0usize);
    // SAFETY: the dynamic section is an array of entries ending in DT_NULL.
    unsafe {
        let mut d = (base + dynamic) as *const Dyn;
        while (*d).tag != DT_NULL {
            let v = (*d).val as usize;
            match (*d).tag {
                DT_STRTAB => strtab = v,
                DT_SYMTAB => symtab = v,
                DT_RELA => rela = v,
                DT_RELASZ => relasz = v,
                DT_JMPREL => jmprel = v,
                DT_PLTRELSZ => pltrelsz = v,
                _ => {}
            }
            d = d.add(1);
        }
    }
    if strtab == 0 || symtab == 0 {
        return false;
    }
    // ld.so rewrites these addresses in place once it has loaded the
    // object; the vDSO's, which it does not, are offsets from the base.
    let at = |p: usize| if p < base { base + p } else { p };
    let (strtab, symtab) = (at(strtab), at(symtab));
    [(rela, relasz), (jmprel, pltrelsz)]
        .into_iter()
        .filter(|&(p, len)| p != 0 && len != 0)
        .any(|(p, len)| {
            // SAFETY: the relocation tables hold `len` bytes of entries;
            // each names a symbol of the object's symbol table, whose name
            // is a C string in its string table.
            unsafe {
                let relocs =
                    std::slice::from_raw_parts(at(p) as *const Rela, len / size_of::<Rela>());
                relocs.iter().any(|r| {
                    let index = (r.info >> 32) as usize;
                    if index == 0 {
                        return false;
                    }
                    let sym = &*(symtab as *const libc::Elf64_Sym).add(index);
                    sym.st_shndx == SHN_UNDEF && {
                        let name = CStr::from_ptr((strtab + sym.st_name as usize) as *const c_char);
                        REGISTRARS.contains(&name)
                    }
                })
            }
        })
}

/// glibc's `__libc_single_threaded` (2.32 and later): whether this process
/// has only ever had one thread. `false` where libc does not say.
pub fn single_threaded() -> bool {
    static FLAG: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let at = *FLAG
        .get_or_init(|| super::dl::symbol(c"__libc_single_threaded").map_or(0, |p| p as usize));
    // SAFETY: the address of glibc's `char __libc_single_threaded`, which
    // lives as long as libc; a volatile read, as another thread may write.
    at != 0 && unsafe { std::ptr::read_volatile(at as *const c_char) } != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_registers_no_fork_handler() {
        // Rust's std and libc register none; the test harness links
        // nothing that does.
        assert!(!handlers_possible());
    }

    #[test]
    fn a_second_thread_ends_single_threadedness_for_good() {
        // The test harness runs tests on threads of its own.
        std::thread::spawn(|| {}).join().unwrap();
        assert!(!single_threaded());
    }
}
