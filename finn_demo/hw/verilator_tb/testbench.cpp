// One FINN layer's AXI streams, driven for finn_demo/verilator.py.
//   testbench INPUT_WORDS OUTPUT_WORDS COUNT MAX_IDLE
// INPUT_WORDS holds one hexadecimal word per line, fed to in0_V as fast as TREADY allows;
// out0_V is always ready. OUTPUT_WORDS gets "cycle word" per output beat until COUNT beats
// came out; cycles count rising edges from the first input beat accepted (cycle 0).
// Exit status 3 when no beat moves for MAX_IDLE cycles before then (a layer that stalls or drops beats).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "Vfinn_sim_top.h"
#include "verilated.h"

using Word = std::vector<uint32_t>;  // 32-bit chunks, least significant first

static Word parse_hex(const std::string& text) {
    Word word;
    for (size_t end = text.size(); end > 0;) {
        size_t begin = end >= 8 ? end - 8 : 0;
        word.push_back(static_cast<uint32_t>(std::stoul(text.substr(begin, end - begin), nullptr, 16)));
        end = begin;
    }
    return word;
}

// Ports up to 64 bits are integers, wider ones VlWide<N> (N 32-bit words): one overload each.
template <typename Port> void put(Port& port, const Word& word) {
    uint64_t value = 0;
    for (size_t i = 0; i < word.size() && i < 2; ++i) value |= uint64_t(word[i]) << (32 * i);
    port = static_cast<Port>(value);
}

template <std::size_t N> void put(VlWide<N>& port, const Word& word) {
    for (size_t i = 0; i < N; ++i) port[i] = i < word.size() ? word[i] : 0;
}

static void print_chunk(std::ostream& out, uint32_t chunk) {
    char text[9];
    std::snprintf(text, sizeof text, "%08x", chunk);
    out << text;
}

template <typename Port> void print_hex(std::ostream& out, const Port& port) {
    const uint64_t value = port;
    print_chunk(out, uint32_t(value >> 32));
    print_chunk(out, uint32_t(value));
}

template <std::size_t N> void print_hex(std::ostream& out, const VlWide<N>& port) {
    for (size_t i = N; i-- > 0;) print_chunk(out, port[i]);
}

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: testbench INPUT_WORDS OUTPUT_WORDS COUNT MAX_IDLE\n";
        return 2;
    }
    std::vector<Word> inputs;
    std::ifstream input_file(argv[1]);
    for (std::string line; std::getline(input_file, line);)
        if (!line.empty()) inputs.push_back(parse_hex(line));
    std::ofstream output_file(argv[2]);
    const long count = std::stol(argv[3]), max_idle = std::stol(argv[4]);

    VerilatedContext context;
    Vfinn_sim_top top{&context};
    top.ap_clk = 0;
    top.ap_rst_n = 0;
    top.in0_V_TVALID = 0;
    top.out0_V_TREADY = 0;
    for (int edge = 0; edge < 32; ++edge) {  // 16 cycles in reset
        top.ap_clk = !top.ap_clk;
        top.eval();
    }
    top.ap_rst_n = 1;

    size_t next = 0;
    long produced = 0, cycle = -1;  // -1 until the first input beat is accepted
    for (long idle = 0; produced < count && idle < max_idle; ++idle) {
        top.in0_V_TVALID = next < inputs.size();
        if (next < inputs.size()) put(top.in0_V_TDATA, inputs[next]);
        top.out0_V_TREADY = 1;
        top.ap_clk = 0;
        top.eval();
        const bool accepted = top.in0_V_TVALID && top.in0_V_TREADY;  // sampled before the edge
        const bool delivered = top.out0_V_TVALID && top.out0_V_TREADY;
        if (accepted && cycle < 0) cycle = 0;
        if (delivered) {
            output_file << cycle << ' ';
            print_hex(output_file, top.out0_V_TDATA);
            output_file << '\n';
            ++produced;
        }
        top.ap_clk = 1;
        top.eval();
        if (accepted) ++next;
        if (cycle >= 0) ++cycle;
        if (accepted || delivered) idle = 0;
    }
    top.final();
    return produced < count ? 3 : 0;
}
