// Uses the installed headers and libraries: objects of a label map (sqa, io) and a checkpoint error (sam).
#include <cstdio>

#include <sqasam/error.hpp>
#include <sqasam/sam.hpp>
#include <sqasam/sqa.hpp>

int main() {
    cv::Mat labels = cv::Mat::zeros(32, 32, CV_32S);
    labels(cv::Rect(2, 2, 5, 5)).setTo(1);
    labels(cv::Rect(20, 20, 6, 4)).setTo(2);
    const auto objects = sqasam::find_objects(labels);
    try {
        sqasam::Sam::load("no_such_checkpoint.pth");
        std::puts("consumer: loading a missing checkpoint did not fail");
        return 1;
    } catch (const sqasam::Error& e) {
        std::printf("consumer: %zu objects; missing checkpoint: %s\n", objects.size(), e.what());
    }
    return objects.size() == 2 ? 0 : 1;
}
