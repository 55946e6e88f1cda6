// llama.cpp's own chat parser, for tests/test_parse_parity.py: reads a request as JSON on stdin
// ({"template", "tools", "messages", "reasoning_format", "texts"}), applies the template as llama-server
// does (common_chat_templates_apply) and prints llama.cpp's parse of each text as that request's reply
// (common_chat_parse, as llama-server parses a finished reply), or {"error": ...} where it rejects one.
#include "chat.h"

#include <nlohmann/json.hpp>

#include <iostream>
#include <sstream>

using json = nlohmann::ordered_json;

int main() {
    std::stringstream ss;
    ss << std::cin.rdbuf();
    const json in = json::parse(ss.str());
    auto tmpls = common_chat_templates_init(nullptr, in.at("template").get<std::string>(), "<s>", "</s>");
    common_chat_templates_inputs inputs;
    inputs.messages = common_chat_msgs_parse_oaicompat(common_json::parse(in.at("messages").dump()));
    inputs.tools = common_chat_tools_parse_oaicompat(common_json::parse(in.value("tools", json::array()).dump()));
    inputs.parallel_tool_calls = true;
    inputs.reasoning_format = common_reasoning_format_from_name(in.value("reasoning_format", std::string("auto")));
    json out = json::array();
    try {
        const auto params = common_chat_templates_apply(tmpls.get(), inputs);
        common_chat_parser_params parser(params);
        parser.reasoning_format = inputs.reasoning_format;
        parser.parse_tool_calls = !inputs.tools.empty();
        if (!params.parser.empty()) {
            parser.parser.load(params.parser);
        }
        for (const auto & text : in.at("texts")) {
            try {
                out.push_back(json::parse(common_chat_parse(text.get<std::string>(), false, parser).to_json_oaicompat().dump()));
            } catch (const std::exception & e) {
                out.push_back(json{{"error", e.what()}});
            }
        }
    } catch (const std::exception & e) {
        out = json{{"error", e.what()}};
    }
    std::cout << out.dump() << std::endl;
}
