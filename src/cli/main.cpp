#include <exception>
#include <iostream>

#include "cli/commands.hpp"
#include "sqasam/error.hpp"

int main(int argc, char** argv) {
    CLI::App app{"sqasam: flag segmentation predictions not to trust, without ground truth (SQA-SAM)"};
    app.require_subcommand(1);
    sqasam::cli::add_segment_command(app);
    sqasam::cli::add_score_command(app);
    sqasam::cli::add_bench_command(app);
    sqasam::cli::add_test_model_command(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const sqasam::Error& e) {
        std::cerr << "sqasam: error: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "sqasam: error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
