//! Runs an exported mpsnn model on embedded MNIST test images on a Cortex-M4F (QEMU
//! `mps2-an386`), prints each prediction with its instruction count, and exits non-zero if any
//! prediction differs from the host runtime's (`EXPECTED`, computed at asset-build time).
//!
//! Instruction counts: QEMU runs with `-icount shift=0`, where each guest instruction advances
//! the virtual clock by exactly 1 ns. SysTick counts that clock (scaled by the board's clock),
//! so the firmware first calibrates instructions per tick with a loop of a known instruction
//! count ([`spin`]) and then converts (±1 tick of 40 instructions per reading on mps2-an386's
//! 25 MHz clock). These are instructions, not M4 cycles.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use mpsnn_micro::{Input, Model};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

const STACK_PAINT: u32 = 0x5AFE_C0DE;

static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    hprintln!("MCU FAIL: hard fault");
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    hprintln!("MCU FAIL: panic");
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

/// Stops here if the semihosting exit returns (no debugger attached on real hardware).
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

/// SysTick ticks since start (24-bit counter extended by the wrap interrupt).
fn ticks() -> u64 {
    loop {
        let w = WRAPS.load(Ordering::SeqCst);
        let c = SYST::get_current();
        if WRAPS.load(Ordering::SeqCst) == w {
            return u64::from(w) * (1 << 24) + u64::from(0x00FF_FFFF - c);
        }
    }
}

/// Executes exactly `2·n` instructions (`n` ≥ 1 iterations of `subs; bne`).
#[inline(never)]
fn spin(n: u32) {
    // SAFETY: a register-only countdown loop; it touches no memory and no stack.
    unsafe {
        core::arch::asm!("2:", "subs {0}, #1", "bne 2b", inout(reg) n => _, options(nomem, nostack));
    }
}

extern "C" {
    static mut __ebss: u32;
}

/// Fills the unused stack (from the end of .bss to just below the current frame) with a
/// pattern, so [`stack_peak`] can find how deep the stack went.
fn paint_stack() {
    let lo = &raw mut __ebss as usize;
    let hi = cortex_m::register::msp::read() as usize - 256;
    let mut p = lo;
    while p < hi {
        // SAFETY: [__ebss, sp − 256) is RAM between the last static and the live stack frames;
        // nothing else uses it, and the address is word-aligned (both bounds are).
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT) };
        p += 4;
    }
}

/// Bytes of stack used since [`paint_stack`], measured from the top of RAM.
fn stack_peak(top: usize) -> usize {
    let mut p = &raw mut __ebss as usize;
    // SAFETY: reads the painted region [__ebss, top), all RAM, word-aligned.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT {
        p += 4;
    }
    top - p
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().unwrap_or_else(|| fail("peripherals"));
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(0x00FF_FFFF);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();
    let stack_top = cortex_m::register::msp::read() as usize;
    paint_stack();

    // Calibration: a loop of exactly 2·CAL instructions.
    const CAL: u32 = 10_000_000;
    let t0 = ticks();
    spin(CAL);
    let cal_ticks = (ticks() - t0).max(1);
    let instr = |dt: u64| dt * u64::from(2 * CAL) / cal_ticks;

    let t0 = ticks();
    let model = match Model::parse(assets::MODEL) {
        Ok(m) => m,
        Err(_) => fail("blob rejected"),
    };
    let parse_instr = instr(ticks() - t0);
    let scratch = cortex_m::singleton!(: [u32; assets::SCRATCH_WORDS] = [0; assets::SCRATCH_WORDS])
        .unwrap_or_else(|| fail("scratch"));
    let mut scores = [0.0f32; assets::CLASSES];
    hprintln!(
        "calibration: {} SysTick ticks for {} instructions; model: {} bytes, T = {}, {} ops, scratch {} bytes; parse+CRC {} instructions",
        cal_ticks,
        2 * CAL,
        assets::MODEL.len(),
        model.timesteps(),
        model.op_count(),
        model.scratch_bytes(),
        parse_instr
    );

    let (mut mismatches, mut total) = (0u32, 0u64);
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let n = assets::EXPECTED.len();
    for (i, (image, &want)) in assets::IMAGES
        .chunks_exact(assets::INPUT_LEN)
        .zip(assets::EXPECTED)
        .enumerate()
    {
        let t0 = ticks();
        let got = model.run(Input::U8(image), scratch, &mut scores);
        let dt = instr(ticks() - t0);
        let got = match got {
            Ok(p) => p,
            Err(_) => fail("inference error"),
        };
        let ok = got == usize::from(want);
        mismatches += u32::from(!ok);
        total += dt;
        lo = lo.min(dt);
        hi = hi.max(dt);
        hprintln!(
            "image {}: predicted {} host {} {} ({} instructions)",
            i,
            got,
            want,
            if ok { "ok" } else { "MISMATCH" },
            dt
        );
    }
    let stack = stack_peak(stack_top);
    hprintln!(
        "MCU RESULT: n={} mismatches={} instructions_per_inference_mean={} min={} max={} parse_instructions={} stack_bytes={} scratch_bytes={}",
        n,
        mismatches,
        total / n.max(1) as u64,
        lo,
        hi,
        parse_instr,
        stack,
        model.scratch_bytes()
    );
    debug::exit(if mismatches == 0 && n > 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    halt()
}

fn fail(why: &str) -> ! {
    hprintln!("MCU FAIL: {}", why);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}
