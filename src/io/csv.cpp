// Reading CSV files (manifests, finished runs' tables).

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {

std::vector<CsvRow> read_csv(const std::string& path) {
    const std::optional<std::string> contents = read_file(path);
    if (!contents) throw Error(path, "cannot open the CSV file");
    const std::string& text = *contents;

    std::vector<CsvRow> rows;
    CsvRow row{1, {std::string()}};
    int line = 1;
    bool quoted = false, any = false;  // any: the row holds a character or a separator
    auto finish_row = [&] {
        if (any) rows.push_back(std::move(row));
        row = CsvRow{line, {std::string()}};
        any = false;
    };
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\n') ++line;
        if (quoted) {
            if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
                row.fields.back() += '"';
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                row.fields.back() += c;
            }
        } else if (c == '"') {
            quoted = any = true;
        } else if (c == ',') {
            row.fields.emplace_back();
            any = true;
        } else if (c == '\n') {
            finish_row();
        } else if (c != '\r') {
            row.fields.back() += c;
            any = any || (c != ' ' && c != '\t');
        }
    }
    if (quoted) throw Error(path, "line " + std::to_string(row.line) + ": unterminated quoted field");
    finish_row();
    return rows;
}

}  // namespace sqasam
